"""Errors that carry a one-line message fit for a user; the CLI prints them and exits 2."""


class JaxnstError(Exception):
    """Base class: anything jaxnst raises on purpose has a message that names the culprit."""


class WeightsError(JaxnstError):
    """A weights file is missing, unreadable, truncated, or not the VGG19 it claims to be."""


class ImageError(JaxnstError):
    """An input image cannot be read, or an output image cannot be written."""


class ConfigError(JaxnstError):
    """An option or a combination of options is invalid."""


class OutputError(JaxnstError):
    """An output file cannot be written (a full disk, a lost directory): the machine, exit 1."""
