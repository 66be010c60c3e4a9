from axes.backends import AxesStandaloneBackend


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' lockout check for log-ins that come with a request.

    Every log-in over HTTP (the log-in page, the admin's) passes its request.
    An authenticate() without one comes from code (the test client's login(),
    a shell) and has no address to throttle: django-axes would raise; this
    leaves it to ModelBackend.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
