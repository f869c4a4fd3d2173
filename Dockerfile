# The clipsearch service and loader: one image, CPU-only torch, the package installed from its wheel
# exactly as .ci/wheel-smoke installs and checks it on every CI run.
#   docker build -t clipsearch .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clipsearch ./clipsearch
COPY service ./service
COPY loader ./loader
COPY sql ./sql
RUN pip wheel --no-cache-dir --no-deps -w /dist .

FROM python:3.11-slim
RUN pip install --no-cache-dir torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cpu
COPY --from=build /dist /dist
RUN pip install --no-cache-dir /dist/*.whl && rm -rf /dist
WORKDIR /data
ENV CLIPSEARCH_DB=/data/clipsearch-data
EXPOSE 8000
CMD ["clipsearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
