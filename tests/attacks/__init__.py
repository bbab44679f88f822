"""Attacks on a real server (issue 11): each finding of the black-box attack, replayed
against gunicorn in production mode, eventlet worker and gevent worker, with a
bystander user measuring what the attack costs everybody else."""
