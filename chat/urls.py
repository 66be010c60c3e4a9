from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.room_list_page, name="rooms"),
    # Before <slug>/: "search" is a valid slug, and this page wins over a room of that name.
    path("search/", views.search_page, name="search"),
    path("dm/<str:username>/", views.direct_page, name="direct"),
    path("<str:slug>/", views.room_page, name="room"),
    path("<str:slug>/leave", views.room_leave, name="leave"),
    path("<str:slug>/messages", views.room_messages, name="messages"),
    path("<str:slug>/messages/<int:message_id>/delete", views.message_delete_view, name="message-delete"),
]
