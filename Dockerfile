# deidgate: one image for the API, the listener and the workers (the command picks the role).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --system --uid 10001 --home-dir /data deidgate \
 && mkdir -p /data && chown deidgate /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
COPY synthetic ./synthetic
COPY policies ./policies
COPY migrations ./migrations
# The CPU build of torch first (the scoring image adds CUDA); then the package itself.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && pip install .
USER deidgate
VOLUME ["/data"]
EXPOSE 8080 11112
CMD ["deidgate", "serve"]
