"""System checks (ids keyrunes_django.E001...). Filled in by the foundation work."""
