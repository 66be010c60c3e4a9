from django import forms


class RoomForm(forms.Form):
    name = forms.CharField(max_length=100, label="Room name", widget=forms.TextInput(attrs={"autocomplete": "off"}))
