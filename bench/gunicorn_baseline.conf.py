"""gunicorn settings for the stock baseline (bench/baseline_app.py).

Stock except two things the benchmark needs: worker_connections high enough to hold
10k sockets (gunicorn's default of 1000 would cap it), and the GC pause probe.
"""

worker_connections = 20000
timeout = 120
graceful_timeout = 5


def post_worker_init(worker) -> None:
    from utils.ops.gc_pauses import install_from_env

    install_from_env()
