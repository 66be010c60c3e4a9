from accounts.models import UsernameSkeleton
from accounts.skeleton import username_skeleton_digest


def username_look_alike_exists(*, username: str) -> bool:
    """Whether an existing user's name looks like username (same skeleton, any case): one index lookup."""
    return UsernameSkeleton.objects.filter(digest=username_skeleton_digest(username)).exists()
