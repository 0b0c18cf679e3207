# The sensorlake processes (producer, consumer, transforms, Streamlit app) for compose.yaml.
# Kafka, PostgreSQL and Redis come from their own images there; the local stack of
# app/stack.py is not used inside containers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs (no .git, no local state, no tests): dependencies install in
# their own layer, so editing code does not reinstall them.
COPY pyproject.toml README.md ./
COPY sensorlake/ sensorlake/
COPY ingest/ ingest/
COPY lake/ lake/
COPY transforms/ transforms/
COPY app/ app/
RUN pip install . \
    && useradd --create-home --uid 10001 sensorlake \
    && mkdir -p /data/lake /data/state \
    && chown -R sensorlake /data

USER sensorlake
WORKDIR /home/sensorlake
ENV SENSORLAKE_STATE_DIR=/data/state \
    SENSORLAKE_DATA_PATH=/data/lake
EXPOSE 8501
CMD ["sensorlake", "--help"]
