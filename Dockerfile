# syntax=docker/dockerfile:1
# Multi-stage: build wheels in one stage, run as a non-root user in a slim image with a CJK font for posters.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip && /opt/venv/bin/pip install .

FROM python:3.11-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-wqy-microhei tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 sangyu
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 APP_ENV=production HOST=0.0.0.0 PORT=8000
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/sangyu
COPY alembic.ini ./
COPY migrations ./migrations
RUN mkdir -p qrcodes var && chown -R sangyu:sangyu /srv/sangyu
USER sangyu
EXPOSE 8000
ENTRYPOINT ["tini", "--"]
CMD ["sangyu", "serve"]
