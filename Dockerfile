# The Value OS application image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.lock
COPY core ./core
COPY merkle ./merkle
COPY chain ./chain
COPY api ./api
COPY jobs ./jobs
COPY valueos ./valueos
RUN pip install --no-cache-dir --no-deps .
EXPOSE 8000
ENTRYPOINT ["valueos"]
