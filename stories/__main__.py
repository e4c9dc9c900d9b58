from stories.cli import main

raise SystemExit(main())
