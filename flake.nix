# Placeholder: the NixOS flake (host c220g5, modules, packages, VM tests) is its own
# issue. It parses, has no inputs and no outputs yet.
{
  description = "labnode: a declarative NixOS research node, measured before and after";

  outputs = _: {};
}
