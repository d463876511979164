# syntax=docker/dockerfile:1
#
# One image for every Threadbus process. The command picks the process:
#   python -m services.api | services.run_starter | services.run_poller
#   python -m services.tool_executor | services.message_archiver | services.file_indexer
#   sh -c "threadbus migrate && threadbus create-topics"   (one-shot)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# bubblewrap sandboxes the code interpreter inside the tool-executor container
# (it needs unprivileged user namespaces; see docker-compose.yml / deploy/).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 threadbus \
    && useradd --system --uid 10001 --gid threadbus --no-create-home \
       --home-dir /app --shell /usr/sbin/nologin threadbus

WORKDIR /app

# The whole repo minus .dockerignore (tests, bench, .git, .venv, ...): the code,
# pyproject.toml and migrations/, which `threadbus migrate` reads from /app.
COPY . /app

# The s3 extra (boto3) lets THREADBUS_BLOB_STORE=s3 work without another image.
RUN pip install --no-cache-dir ".[s3,sandbox]" \
    && rm -rf /app/build /app/*.egg-info

# Import `services`/`schemas` from /app in every entry point, including the
# `threadbus` console script, so code that locates /app/migrations relative to
# its own file finds it (site-packages has no migrations/).
ENV PYTHONPATH=/app

# Code stays root-owned and read-only for the service user.
USER 10001:10001

EXPOSE 8000
CMD ["python", "-m", "services.api"]
