FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends gettext && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY . .
RUN pip install --no-cache-dir . && python manage.py compilemessages --ignore '*/site-packages/*' >/dev/null
RUN useradd --create-home nurture && chown -R nurture /app
USER nurture
EXPOSE 8000
CMD ["gunicorn", "nurture.wsgi", "--bind", "0.0.0.0:8000"]
