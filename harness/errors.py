"""The one exception type for mistakes a user can fix (bad config, path, dataset, weights)."""


class UserError(Exception):
    """A problem in the user's input, described in one readable line.

    The message says what is wrong, where (file, key path, or path on disk) and how to fix it.
    Entry points turn it into that line on stderr and exit code 2, without a traceback.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))
