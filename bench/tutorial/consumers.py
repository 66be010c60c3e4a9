import json

from channels.generic.websocket import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    """The room consumer of the official Channels tutorial, speaking the app's frame shape."""

    async def connect(self):
        if not self.scope["user"].is_authenticated:
            await self.close()
            return
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code):
        if hasattr(self, "room_group_name"):
            await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data):
        text_data_json = json.loads(text_data)
        body = text_data_json["body"]
        await self.channel_layer.group_send(
            self.room_group_name,
            {"type": "chat.message", "body": body, "username": self.scope["user"].username},
        )

    async def chat_message(self, event):
        await self.send(
            text_data=json.dumps({"type": "chat.message", "body": event["body"], "username": event["username"]})
        )
