"""scripts/audit_local_vm.py, which measures lynis's hardening index inside the local VM (README "Security"):
it reads lynis's report, and says which VM is missing rather than failing with a traceback. The measurement
itself boots a VM: `python3 scripts/audit_local_vm.py --boot`."""
import importlib.util
from types import ModuleType

from support.project import ROOT


def load_audit_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_local_vm", ROOT / "scripts" / "audit_local_vm.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_audit_script_reads_lynis_s_report() -> None:
    report = "\n".join([
        "# Lynis Report", "report_version_major=1", "hardening_index=83",
        "warning[]=SSH-7408|Something is weak|-|-|",
        "suggestion[]=DEB-0880|Copy /etc/fail2ban/jail.conf to jail.local|-|-|",
        "suggestion[]=BOOT-5264|Consider hardening system services|Run 'systemd-analyze security SERVICE'|-|",
    ])
    index, warnings, suggestions = load_audit_script().parse_report(report)
    assert index == 83
    assert warnings == [("SSH-7408", "Something is weak")]
    assert suggestions == [("DEB-0880", "Copy /etc/fail2ban/jail.conf to jail.local"),
                           ("BOOT-5264", "Consider hardening system services [Run 'systemd-analyze security SERVICE']")]
