"""Connected sockets: who they are and when their tokens expire, what a session may
send before it signs in, exactly-once replay and the client managers, the single
ping task, and draining a process's transports."""
