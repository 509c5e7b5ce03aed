"""Step 3, crops: the face-aligned square a model reads (:mod:`.align`, framed by ``crop_calibration.json``) and the
UTKFace-like chips of :meth:`agegender.Estimator.predict_crops` (:mod:`.chips`)."""
