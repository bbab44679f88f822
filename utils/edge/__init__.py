"""The HTTP surface in front of the app: the WSGI layers and the one function that
stacks them (stack.py), origins and CORS, limits, security headers, the Engine.IO
guard and read budgets, and the error shape every HTTP error takes."""
