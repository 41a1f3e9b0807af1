from django.urls import path

from benchproject import views

urlpatterns = [
    path("open/", views.OpenView.as_view()),
    path("keyrunes/", views.KeyrunesView.as_view()),
    path("simplejwt/", views.SimpleJWTView.as_view()),
    path("oidc/", views.OIDCView.as_view()),
    path("bench-stats/", views.stats),
]
