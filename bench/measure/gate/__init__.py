"""The CI regression gate (``bench ci``): ``run`` drives it, ``verdicts`` judges, ``worker`` times one revision."""
