"""layernet: runbooks that deploy Azure IoT Operations into a Purdue-layered network and prove it works."""

__version__ = "0.1.0"
