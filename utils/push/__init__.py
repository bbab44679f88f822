"""Web Push: VAPID keys, subscriptions, sending, and the dispatcher that decides when."""
