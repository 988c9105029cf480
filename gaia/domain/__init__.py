"""Pure rules of the platform: quota arithmetic, roles and permissions, errors.

Nothing here does I/O or imports another Gaia package; the store, controllers and API call in.
"""
