"""Route modules, one per resource; each only translates HTTP to service calls and back."""
