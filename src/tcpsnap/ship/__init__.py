"""Ship a recording's finished files to object storage (S3 or S3-compatible), and read a
fleet's shipped files back (``tcpsnap.ship.fleet``). Needs ``pip install 'tcpsnap[ship]'``
(boto3). See ``tcpsnap.ship.shipper`` for what is shipped and when a file counts as shipped.
"""

from .shipper import RECEIPTS, Pending, Shipper, pending, scan, unshipped
from .target import Target, Transient, parse_url

__all__ = ["Shipper", "Target", "Pending", "pending", "scan", "parse_url", "RECEIPTS", "unshipped", "Transient"]
