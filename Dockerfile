# The dunning service image: the worker, the HTTP API and the operator CLI (`dunning`).
#   docker build -t dunning .
#   docker run --rm dunning dunning --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DUNNING_POLICY_DIR=/app/policies

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY dunning/ dunning/
COPY workflows/ workflows/
COPY activities/ activities/
COPY starter/ starter/
COPY worker.py ./
RUN pip install . && rm -rf /root/.cache

# Policies stay files: mount your own folder over /app/policies (or set DUNNING_POLICY_DIR).
COPY policies/ policies/

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin dunning \
    && mkdir -p /app/.dunning && chown dunning:dunning /app/.dunning
USER dunning

EXPOSE 8000
# Override per service: `dunning worker`, `dunning api --host 0.0.0.0`.
CMD ["dunning", "worker"]
