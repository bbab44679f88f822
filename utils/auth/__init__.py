"""Who is asking: user tokens (tokens.py), bearer credentials compared in constant
time (credentials.py), and the checks routes and sockets use (access.py)."""
