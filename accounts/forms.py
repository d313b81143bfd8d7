"""The accounts forms: adding a teammate, the first admin of a fresh install, a teammate's
monthly budget, and a new API token."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.utils.safestring import mark_safe

from accounts import team
from accounts.models import ApiToken

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


class BudgetForm(forms.Form):
    """An admin sets a teammate's monthly budget in dollars, or lifts it (left empty)."""

    amount = forms.CharField(
        label="Monthly budget (dollars)",
        required=False,
        max_length=20,
        help_text="Like 25 or 12.50. Leave it empty for no limit; 0 stops all their runs.",
        widget=forms.TextInput(
            attrs={"inputmode": "decimal", "autocomplete": "off", "placeholder": "No limit"}
        ),
    )

    def clean_amount(self) -> Any:
        try:
            return team.dollars(self.cleaned_data["amount"])
        except ValueError as refused:
            raise forms.ValidationError(str(refused)) from None


class TokenForm(forms.Form):
    """A new API token: only its name is asked for (the token itself is made by sam3web)."""

    name = forms.CharField(
        label="Token name",
        max_length=100,  # ApiToken.name's
        strip=True,
        help_text="What it is for, so you can tell your tokens apart: “laptop”, “nightly batch”.",
        error_messages={"required": "Give the token a name."},
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "e.g. laptop"}),
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        # Two live tokens with one name could not be told apart in the list, the history or
        # the usage page; a revoked one's name may be used again.
        taken = ApiToken.objects.filter(
            user=self.user, name__iexact=name, revoked_at__isnull=True
        ).exists()
        if taken:
            raise forms.ValidationError(
                f"You already have a token named “{name}”. Choose another name, or revoke "
                "that one first."
            )
        return name
