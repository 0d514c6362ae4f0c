#!/usr/bin/env python3
"""Static checks of terraform/ that need no terraform binary (none can be downloaded
here): every .tf parses (python-hcl2); the environment variables and secrets the region
module sets for each binary are names that binary accepts (read from its `--help`);
every region of the deployment gets a latency record guarded by a /readyz health check;
and every region's node lists every region's own public name (LEDGER_PUBLIC_URLS, what
GET /v1/regions answers), a name modules/global creates for each region.

    scripts/terraform-check.py BIN_DIR           the checks, on the repository's terraform/
    scripts/terraform-check.py BIN_DIR --planted each check on a planted violation: must fail

Exits non-zero with the reasons on any failure.
"""

import copy
import re
import subprocess
import sys
from pathlib import Path

import hcl2

ROOT = Path(__file__).resolve().parent.parent / "terraform"

# Which locals of modules/region configure which binary.
BINARIES = {
    "region-node": ("node_env", "node_secrets"),
    "ledger-replicator": ("replicator_env", "replicator_secrets"),
    "ownership-server": ("voter_env", "voter_secrets"),
}


def one(value):
    """python-hcl2 wraps attribute values in one-element lists; unwrap them."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def parse_all():
    """Every .tf file under terraform/, parsed: {relative path: document}."""
    parsed, errors = {}, []
    for path in sorted(ROOT.rglob("*.tf")):
        try:
            with open(path) as f:
                parsed[str(path.relative_to(ROOT))] = hcl2.load(f)
        except Exception as error:  # the parser raises several kinds
            errors.append(f"{path.relative_to(ROOT)} does not parse: {error}")
    return parsed, errors


def module_locals(parsed, module):
    merged = {}
    for path, doc in parsed.items():
        if path.startswith(f"modules/{module}/"):
            for block in doc.get("locals", []):
                merged.update({k: one(v) for k, v in block.items()})
    return merged


def resources(parsed, module, kind):
    found = {}
    for path, doc in parsed.items():
        if path.startswith(f"modules/{module}/"):
            for block in doc.get("resource", []):
                for name, body in block.get(kind, {}).items():
                    found[name] = body
    return found


def accepted_names(bin_dir, binary):
    """The environment variables `binary --help` names, and prefixes it documents as
    families (`LEDGER_KAFKA_<PROPERTY>`)."""
    text = subprocess.run(
        [str(Path(bin_dir) / binary), "--help"], capture_output=True, text=True, check=True
    ).stdout
    # `[env: NAME=default]`, or `[env: NAME]` for values hidden from --help (secrets).
    names = set(re.findall(r"\[env: ([A-Z0-9_]+)[=\]]", text))
    prefixes = set(re.findall(r"\b([A-Z0-9_]+_)<[A-Z]+>", text))
    return names, prefixes


def check_env(parsed, bin_dir):
    failures = []
    local = module_locals(parsed, "region")
    for binary, maps in BINARIES.items():
        names, prefixes = accepted_names(bin_dir, binary)
        for map_name in maps:
            if map_name not in local or not isinstance(local[map_name], dict):
                failures.append(f"modules/region: local.{map_name} is missing or not a literal map")
                continue
            for name in local[map_name]:
                if name not in names and not any(name.startswith(p) for p in prefixes):
                    failures.append(
                        f"modules/region: local.{map_name} sets {name}, which {binary} does not accept"
                    )
    return failures


def check_latency_records(parsed):
    failures = []
    records = resources(parsed, "global", "aws_route53_record")
    checks = resources(parsed, "global", "aws_route53_health_check")
    latency = [
        (name, body) for name, body in records.items() if one(body.get("latency_routing_policy"))
    ]
    if not latency:
        return ["modules/global: no latency-routed record"]
    for name, body in latency:
        if one(body.get("for_each")) != "${var.regions}":
            failures.append(f"modules/global: record {name} is not made for every region (for_each = var.regions)")
        guard = str(one(body.get("health_check_id", "")))
        match = re.search(r"aws_route53_health_check\.(\w+)\[each\.key\]", guard)
        if not match:
            failures.append(f"modules/global: record {name} has no per-region health check")
            continue
        check = checks.get(match.group(1), {})
        if one(check.get("for_each")) != "${var.regions}":
            failures.append(f"modules/global: health check {match.group(1)} is not made for every region")
        if one(check.get("resource_path")) != "/readyz":
            failures.append(f"modules/global: health check {match.group(1)} does not probe /readyz")
    # The environment hands every region it builds to the global module.
    for path, doc in parsed.items():
        if not path.startswith("environments/"):
            continue
        for block in doc.get("module", []):
            for name, body in block.items():
                if one(body.get("source")) == "../../modules/global":
                    regions = str(one(body.get("regions", "")))
                    if "in local.regions" not in regions:
                        failures.append(f"{path}: module {name} is not given every region")
    return failures


def check_public_urls(parsed):
    """The node's LEDGER_PUBLIC_URLS names every region as <region>.<api_name>, and the
    global module makes exactly those names, one per region."""
    failures = []
    local = module_locals(parsed, "region")
    env = local.get("node_env") or {}
    if "LEDGER_PUBLIC_URLS" not in env:
        return ["modules/region: the node is not given LEDGER_PUBLIC_URLS (GET /v1/regions lists nothing)"]
    urls = str(local.get(str(one(env["LEDGER_PUBLIC_URLS"])).removeprefix("${local.").removesuffix("}"), ""))
    pattern = re.search(
        r"for (\w+)\s*,\s*\w+\s+in\s+var\.regions\s*:\s*\"\$\{\1\}=https://\$\{\1\}\.\$\{var\.api_name\}\"",
        urls,
    )
    if not pattern:
        failures.append(
            f"modules/region: LEDGER_PUBLIC_URLS is not every region's <region>.<api_name>: {urls!r}"
        )
    records = resources(parsed, "global", "aws_route53_record")
    named = [
        name
        for name, body in records.items()
        if one(body.get("for_each")) == "${var.regions}"
        and one(body.get("name")) == "${each.key}.${var.api_name}"
    ]
    if not named:
        failures.append("modules/global: no record <region>.<api_name> for every region")
    return failures


def run_checks(parsed, bin_dir):
    return check_env(parsed, bin_dir) + check_latency_records(parsed) + check_public_urls(parsed)


def planted(parsed, bin_dir):
    """Each check must catch a violation planted in a copy of the parsed files (a
    failure the unplanted files do not have)."""
    outcomes = []
    baseline = set(run_checks(parsed, bin_dir))

    def expect_failure(label, mutate):
        copy_of = copy.deepcopy(parsed)
        mutate(copy_of)
        caught = [f for f in run_checks(copy_of, bin_dir) if f not in baseline]
        outcomes.append((label, bool(caught), caught[:1]))

    def misspell(docs):
        for path, doc in docs.items():
            if path.startswith("modules/region/"):
                for block in doc.get("locals", []):
                    if "node_env" in block:
                        env = one(block["node_env"])
                        env["LEDGER_REGOIN"] = env.pop("LEDGER_REGION")

    def drop_health_check(docs):
        for path, doc in docs.items():
            if path.startswith("modules/global/"):
                for block in doc.get("resource", []):
                    for body in block.get("aws_route53_record", {}).values():
                        body.pop("health_check_id", None)

    def wrong_probe(docs):
        for path, doc in docs.items():
            if path.startswith("modules/global/"):
                for block in doc.get("resource", []):
                    for body in block.get("aws_route53_health_check", {}).values():
                        body["resource_path"] = ["/healthz"]

    def drop_public_urls(docs):
        for path, doc in docs.items():
            if path.startswith("modules/region/"):
                for block in doc.get("locals", []):
                    if "node_env" in block:
                        one(block["node_env"]).pop("LEDGER_PUBLIC_URLS", None)

    def drop_region_names(docs):
        for path, doc in docs.items():
            if path.startswith("modules/global/"):
                for block in doc.get("resource", []):
                    block.get("aws_route53_record", {}).pop("region_api", None)

    expect_failure("a misspelt variable", misspell)
    expect_failure("a node without the public URLs", drop_public_urls)
    expect_failure("regions without their own public names", drop_region_names)
    expect_failure("a record without a health check", drop_health_check)
    expect_failure("a health check of the wrong route", wrong_probe)
    return outcomes


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    bin_dir = sys.argv[1]
    parsed, errors = parse_all()
    if errors:
        sys.exit("\n".join(errors))
    if "--planted" in sys.argv[2:]:
        outcomes = planted(parsed, bin_dir)
        for label, caught, first in outcomes:
            print(f"planted {label}: {'caught' if caught else 'MISSED'} {first}")
        sys.exit(0 if all(caught for _, caught, _ in outcomes) else 1)
    failures = run_checks(parsed, bin_dir)
    for failure in failures:
        print(f"FAIL {failure}")
    env_count = sum(
        len(module_locals(parsed, "region").get(m, {})) for maps in BINARIES.values() for m in maps
    )
    print(
        f"terraform: {len(parsed)} files parse; {env_count} variables of {len(BINARIES)} binaries "
        f"accepted by their --help; every region has a latency record behind a /readyz check "
        f"and its own public name, listed to clients by every node"
        if not failures
        else f"{len(failures)} failure(s)"
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
