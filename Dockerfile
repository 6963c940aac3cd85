# The rhythmd daemon. Used by compose.yaml; build with `docker build -t rhythmd .`
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rhythmd ./rhythmd
RUN pip install --no-cache-dir . && useradd --create-home rhythmd
USER rhythmd
EXPOSE 8000
CMD ["rhythmd", "serve", "--host", "0.0.0.0", "--port", "8000"]
