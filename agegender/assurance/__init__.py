"""Age assurance on top of the results: the validated calibration of the age distribution (:mod:`.calibration`),
the "is this person over t?" policy (:mod:`.age_check`) and the two-model check (:mod:`.consensus`)."""
