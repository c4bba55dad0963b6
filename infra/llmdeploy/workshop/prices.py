"""What a shape costs per hour, for the cost estimate of `llmdeploy workshop plan`: ONE table, below.

Where the numbers come from, and how far to trust them:
- Source: Oracle's public price list, https://www.oracle.com/cloud/price-list/ (sections "Compute - GPU"
  and "Compute - Virtual Machine Instances"), pay-as-you-go list prices in US dollars, per hour.
- They were entered by hand from that list as the author last knew it (list prices published in 2024-2025)
  and recorded here on 2026-11-22. They were NOT fetched by this code (no network where it was written),
  and prices change, differ by region and currency, and contracts (Universal Credits, discounts) change
  them again. CHECK THEM against the price list or your contract before you rely on an estimate, and edit
  this table (PRICES_CHECKED says when it was last checked).
- GPU shapes are priced per GPU-hour on the list; the table holds the whole shape (GPUs x price per GPU).
  Flex CPU shapes are priced per OCPU-hour plus per GB-hour of memory.
- Not included: boot volumes (block storage, about $0.0425 per GB-month at balanced performance), reserved
  public IPs, outbound data beyond the free allowance, DNS queries. For a day-long workshop they are small
  next to GPU hours, but they are not zero.
"""
from __future__ import annotations

from dataclasses import dataclass

PRICE_SOURCE = "https://www.oracle.com/cloud/price-list/ (Compute), USD pay-as-you-go list prices"
PRICES_RECORDED = "2026-11-22"
PRICES_CHECKED = "never against the live list: entered from the author's knowledge of the 2024-2025 list"


@dataclass(frozen=True)
class Price:
    per_hour: float = 0.0  # the whole shape, for fixed shapes
    per_ocpu_hour: float = 0.0  # Flex shapes
    per_gb_hour: float = 0.0  # Flex shapes: memory

    def hourly(self, ocpus: int = 0, memory_gb: int = 0) -> float:
        return self.per_hour + self.per_ocpu_hour * ocpus + self.per_gb_hour * memory_gb


# shape -> list price per hour (see the module docstring for the source and how far to trust it)
PRICES: dict[str, Price] = {
    "VM.GPU.A10.1": Price(per_hour=2.00),  # A10: $2.00 per GPU-hour
    "VM.GPU.A10.2": Price(per_hour=4.00),
    "BM.GPU.A10.4": Price(per_hour=8.00),
    "BM.GPU.L40S.4": Price(per_hour=14.00),  # L40S: $3.50 per GPU-hour
    "BM.GPU4.8": Price(per_hour=24.40),  # A100 40 GB: $3.05 per GPU-hour
    "BM.GPU.A100-v2.8": Price(per_hour=32.00),  # A100 80 GB: $4.00 per GPU-hour
    "BM.GPU.H100.8": Price(per_hour=80.00),  # H100: $10.00 per GPU-hour
    "VM.Standard.E4.Flex": Price(per_ocpu_hour=0.025, per_gb_hour=0.0015),
    "VM.Standard.E5.Flex": Price(per_ocpu_hour=0.03, per_gb_hour=0.002),
    "VM.Standard3.Flex": Price(per_ocpu_hour=0.04, per_gb_hour=0.0015),
}


def hourly(shape: str, ocpus: int = 0, memory_gb: int = 0) -> float | None:
    """The shape's list price per hour, or None when the table has no price for it."""
    price = PRICES.get(shape)
    return None if price is None else price.hourly(ocpus, memory_gb)
