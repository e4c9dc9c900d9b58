# Developer tasks. Set up the virtualenv first (README, "Set up"); CI runs the same steps in .ci/run.
# `just` itself: `pip install rust-just` (or https://just.systems); every recipe is a plain command to copy.

bin := ".venv/bin"

# list the recipes
default:
    @just --list

# ruff lint and format check
lint:
    {{bin}}/ruff check .
    {{bin}}/ruff format --check .

# rewrite files with ruff's formatter and safe fixes
fmt:
    {{bin}}/ruff check --fix .
    {{bin}}/ruff format .

# mypy, strict
typecheck:
    {{bin}}/mypy

# the test suite; extra arguments go to pytest (TEST_DATABASE_URL / TEST_REDIS_URL select the servers)
test *args:
    {{bin}}/pytest {{args}}

# run the service (embedded PostgreSQL unless DATABASE_URL is set)
serve:
    {{bin}}/stories serve

# Schemathesis against a running server, as CI runs it (CONTRIBUTING.md, "Fuzz the API")
fuzz url *args:
    bash .ci/schemathesis {{url}} {{args}}

# Kubernetes manifests and Prometheus rules as CI checks them (promtool: Debian's prometheus package)
deploy-check:
    {{bin}}/kubernetes-validate --strict --quiet $(ls deploy/kubernetes/*.yaml | grep -v kustomization)
    @command -v promtool >/dev/null || { echo "deploy-check needs promtool: apt-get install prometheus (Debian's package brings it; .ci/run installs it when missing)" >&2; exit 1; }
    promtool check rules deploy/prometheus/stories-alerts.yml
    cd deploy/prometheus && promtool test rules stories-alerts.test.yml

# two API processes (ports 8001, 8002), expiry worker, PostgreSQL, Redis, MinIO in containers (JWT_SECRET: .env)
up:
    docker compose up -d --build

# stop and remove the containers (volumes are kept)
down:
    docker compose down

# the whole CI run: fresh virtualenv, lint, typecheck, tests, embedded smoke test, Schemathesis
ci:
    bash .ci/run
