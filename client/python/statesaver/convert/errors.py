"""errors -- the one exception of the converters."""


class ConvertError(Exception):
    """A model that cannot be converted; the message names the tensor or
    layer and what was expected. The command line prints it and exits 2."""
