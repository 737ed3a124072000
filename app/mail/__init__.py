"""Every transactional mail, one way: messages (what it says), delivery (deliver_later, the outbox), job, transport.

The arrows point one way: delivery -> job -> transport and messages. Nothing here imports a
blueprint, and no module calls back up into the one that imports it.
"""
