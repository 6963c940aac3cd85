# The rhythmd daemon. Used by compose.yaml; build with `docker build -t rhythmd .`
# Dependencies at the versions CI tests (requirements.lock), with the PostgreSQL driver.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE requirements.lock ./
COPY rhythmd ./rhythmd
RUN pip install --no-cache-dir -c requirements.lock '.[postgres]' && useradd --create-home rhythmd
USER rhythmd
EXPOSE 8000
CMD ["rhythmd", "serve", "--host", "0.0.0.0", "--port", "8000"]
