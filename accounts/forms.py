from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.selectors import username_look_alike_exists
from accounts.services import username_skeleton_record

LOOK_ALIKE = "This name looks too much like an existing user's name."


class SignUpForm(UserCreationForm):
    """Django's own sign-up form (username, password1, password2, with its validators), refusing look-alike names."""

    def clean_username(self) -> str | None:
        # Django's checks first: the field's validator and length, and a name taken in another case.
        username = super().clean_username()
        if username and username_look_alike_exists(username=username):
            raise ValidationError(LOOK_ALIKE, code="look_alike")
        return username

    @transaction.atomic
    def save(self, commit: bool = True):
        user = super().save(commit=commit)
        # The user's post_save has recorded the name already; asking again tells
        # whether a look-alike signed up since clean_username(), and raising
        # undoes this sign-up.
        if commit and username_skeleton_record(user=user) is None:
            raise ValidationError({"username": ValidationError(LOOK_ALIKE, code="look_alike")})
        return user
