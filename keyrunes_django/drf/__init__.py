"""Django REST Framework integration (needs ``djangorestframework``)."""
