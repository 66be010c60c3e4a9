# The app image: Daphne serving presence_site.asgi:application.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Hashed, compressed static files for WhiteNoise; the settings need a key and hosts to load.
RUN DEBUG=0 SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput -v 0

RUN useradd --system --uid 10001 presence
USER presence

EXPOSE 8000
# SIGTERM drains: the sockets close with 1012 over SHUTDOWN_DRAIN seconds and the process exits 0
# (compose's stop_grace_period leaves it the time). exec: Daphne is PID 1 and gets the signal itself.
STOPSIGNAL SIGTERM
CMD ["sh", "-c", "exec daphne -b 0.0.0.0 -p 8000 --websocket_timeout ${WEBSOCKET_TIMEOUT:-86400} --ping-interval 20 --ping-timeout 30 --websocket-max-message-size 65536 --proxy-headers presence_site.asgi:application"]
