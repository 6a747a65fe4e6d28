"""The base class of the errors sdkd raises on purpose for a user's mistake or a damaged file.

``sdkd`` (the command) prints such an error as one line (``sdkd: error: ...``); any other exception is a bug
and keeps its traceback. The concrete classes also derive from the built-in they refine (``ValueError``,
``RuntimeError``...), so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations


class SdkdError(Exception):
    """An error whose message is the whole story: what is wrong, with which file or key, and the fix."""
