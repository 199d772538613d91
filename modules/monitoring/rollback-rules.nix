# rules/rollback.yaml with the recovery budget (labnode.monitoring.rollbackRecoveryBudget,
# seconds) written in place of the file's 300, in the rule and its summary. Builtins only,
# so tests/system/monitoring.sh renders it with nix-instantiate and promtool checks it.
{budget ? 300}: let
  text = builtins.readFile ./rules/rollback.yaml;
  b = toString budget;
  from = [
    ''labnode_rollback_recovery_seconds{direction="rollback"} > 300''
    "{{ 300 | humanizeDuration }}"
  ];
  to = [
    ''labnode_rollback_recovery_seconds{direction="rollback"} > ${b}''
    "{{ ${b} | humanizeDuration }}"
  ];
  found = builtins.all (s: builtins.replaceStrings [s] [""] text != text) from;
in
  if found
  then builtins.replaceStrings from to text
  else throw "modules/monitoring/rules/rollback.yaml: the recovery budget's 300 is not where rollback-rules.nix expects it"
