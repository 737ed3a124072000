"""JSON-only serializers for data read back from Redis, so no read path ever unpickles."""

import msgspec
from cachelib.serializers import JSONSerializer
from flask_session.base import Serializer


class JSONCacheSerializer(JSONSerializer):
    """cachelib's JSON serializer, quiet about cache misses.

    cachelib hands a missing key's None to loads(), which then logs a warning on every miss.
    """

    def loads(self, bvalue, *args, **kwargs):
        """Parse a cached JSON value; a miss (None) is simply None."""
        return None if bvalue is None else super().loads(bvalue, *args, **kwargs)


class JSONOnlySessionSerializer(Serializer):
    """Session data as JSON; anything else is treated as no session at all.

    Flask-Session 0.8's own serializer falls back to pickle.loads() on data it cannot
    parse, which would run code planted in a session key. This one never does.
    """

    def __init__(self):
        """Build the msgspec JSON encoder and decoder once."""
        self.encoder = msgspec.json.Encoder()
        self.decoder = msgspec.json.Decoder(dict)

    def encode(self, session):
        """Serialize the session as a JSON object."""
        return self.encoder.encode(dict(session))

    def decode(self, serialized_data):
        """Parse a JSON object, or return None so Flask-Session starts a fresh session."""
        try:
            return self.decoder.decode(serialized_data)
        except msgspec.DecodeError:
            return None
