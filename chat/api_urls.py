from django.urls import path

from chat import views

app_name = "chat-api"

urlpatterns = [
    path("rooms", views.api_rooms, name="api-rooms"),
    path("search", views.search_api, name="search"),
    path("rooms/<str:slug>/messages", views.room_messages_api, name="messages"),
    path("rooms/<str:slug>/messages/<int:message_id>/edits", views.message_edits_api, name="edits"),
]
