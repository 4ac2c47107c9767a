# The dunning service image: the worker, the HTTP API and the operator CLI (`dunning`).
#   docker build -t dunning .
#   docker run --rm dunning dunning --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY dunning/ dunning/
COPY workflows/ workflows/
COPY activities/ activities/
COPY runtime/ runtime/
COPY starter/ starter/
COPY worker.py ./
RUN pip install . && rm -rf /root/.cache
# The shipped policies and templates are package data inside the installed wheel; to use your
# own policies, mount a folder and set DUNNING_POLICY_DIR to it.

# No state in the image or on a volume: cases live in Temporal, the rest in DUNNING_DATABASE_URL.
# Secrets are files in /run/secrets (compose `secrets:`, a Kubernetes Secret volume).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin dunning
ENV DUNNING_STATE_DIR=/tmp/dunning
USER dunning

EXPOSE 8000
# Override per service: `dunning worker`, `dunning api --host 0.0.0.0`.
CMD ["dunning", "worker"]
