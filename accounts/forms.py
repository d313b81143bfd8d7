"""The accounts forms: adding a teammate, and the first admin of a fresh install."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.utils.safestring import mark_safe

PASSWORD_HELP = (
    "At least 8 characters, not only digits, not a common password and not like the username."
)
USERNAME_HELP = "What they sign in with: letters, digits and @ . + - _ only, up to 150."


class _AccountForm(UserCreationForm[Any]):
    """Django's user creation form (duplicate usernames, in any case, are refused; passwords
    go through AUTH_PASSWORD_VALIDATORS), with help short enough to sit under a field."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["username"].help_text = USERNAME_HELP
        # Django's help is an HTML list; a sentence fits the app's field layout.
        self.fields["password1"].help_text = PASSWORD_HELP
        self.fields["password2"].label = "Password again"
        self.fields["password2"].help_text = ""

    def validate_password_for_user(self, user: Any, password_field_name: str = "password1") -> None:
        # What is wrong with the password goes beside it; "Password again" only says whether
        # the two match. (Django puts both beside the second field.)
        super().validate_password_for_user(user, password_field_name)  # type: ignore[misc]


class TeammateForm(_AccountForm):
    """An admin adds a teammate, with a password they set now and pass on to them."""

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "first_name", "last_name", "email")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["email"].label = "Email (optional)"
        self.fields["first_name"].label = "First name (optional)"
        self.fields["last_name"].label = "Last name (optional)"
        self.fields["email"].widget.attrs["autocomplete"] = "off"
        self.fields[
            "password1"
        ].help_text = f"{PASSWORD_HELP} Give it to them yourself; sam3web sends no email."


class FirstAdminForm(_AccountForm):
    """The first admin of a fresh install, made by whoever holds the setup code."""

    setup_code = forms.CharField(
        label="Setup code",
        max_length=64,
        strip=True,
        help_text=mark_safe(
            "Printed in the terminal where <code>bin/serve</code> runs; or run "
            "<code>.venv/bin/python manage.py setup_code</code> on the server."
        ),
        widget=forms.TextInput(
            attrs={
                "autocomplete": "off",
                "autocapitalize": "characters",
                "spellcheck": "false",
                "placeholder": "XXXX-XXXX-XXXX",
            }
        ),
        error_messages={"required": "Enter the setup code."},
    )
    field_order = ["setup_code", "username", "password1", "password2"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["username"].help_text = USERNAME_HELP.replace("What they", "What you")
        # The code comes first on the page, so the cursor starts there.
        self.fields["username"].widget.attrs.pop("autofocus", None)
        self.fields["setup_code"].widget.attrs["autofocus"] = True
