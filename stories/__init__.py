"""Stories: a backend for ephemeral stories on Trio. Importing this package has no side effects."""

__version__ = "0.1.0"
