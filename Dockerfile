# sbaudit: one image for the API (`sbaudit serve`), the workers (`sbaudit worker`) and `sbaudit migrate`.
#
# Build arguments (docs/operations.md, "Base images and package mirrors"):
#   PYTHON_IMAGE         the Python 3.11 base (default python:3.11-slim; e.g. your registry mirror's copy)
#   PIP_INDEX_URL        where pip finds packages (default PyPI); PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST too
#   TORCH_REQUIREMENTS   the engine's torch and torchvision (kept equal to pyproject.toml's pins by the tests)
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_TRUSTED_HOST=

WORKDIR /app

# torch first, in a layer of its own that depends on nothing of the project's: editing pyproject.toml or the
# sources does not download and install it again (about 5 GB with its CUDA libraries).
ARG TORCH_REQUIREMENTS="torch==2.14.1 torchvision==0.29.1"
RUN pip install $TORCH_REQUIREMENTS

# The other dependencies next: source edits do not reinstall them (nor README edits: an empty stand-in
# README.md satisfies the metadata here; the real one comes with the sources).
COPY pyproject.toml ./
RUN mkdir -p sbengine service worker sbclient sbserver \
    && touch sbengine/__init__.py service/__init__.py worker/__init__.py sbclient/__init__.py sbserver/__init__.py \
       README.md \
    && pip install '.[server,mlflow]' \
    && pip uninstall -y sbaudit \
    && rm -rf sbengine service worker sbclient sbserver build README.md

COPY sbengine ./sbengine
COPY service ./service
COPY worker ./worker
COPY sbclient ./sbclient
COPY sbserver ./sbserver
COPY README.md ./
RUN pip install --no-deps . && rm -rf build

# `sbaudit migrate` finds migrations/ in the working directory.
COPY alembic.ini ./
COPY migrations ./migrations

RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home sbaudit \
    && mkdir -p /data \
    && chown sbaudit:sbaudit /data
USER sbaudit

ENV SBAUDIT_DATA_DIR=/data \
    SBAUDIT_HOST=0.0.0.0 \
    SBAUDIT_PORT=8000 \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.matplotlib
VOLUME ["/data"]
EXPOSE 8000

# No HEALTHCHECK here: the same image runs the API and the workers; docker-compose.yml gives each its own.
CMD ["sbaudit", "serve"]
