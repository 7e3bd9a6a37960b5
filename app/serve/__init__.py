"""Processes and sockets: the RFC 6455 connection, the pywsgi handler, the server, the gunicorn worker, logs."""
