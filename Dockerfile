# The clipsearch service and loader (one image, CPU-only torch).
#   docker build -t clipsearch .
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY service ./service
COPY loader ./loader
COPY sql ./sql
RUN pip install --no-cache-dir .
ENV CLIPSEARCH_DB=/data
EXPOSE 8000
CMD ["clipsearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
