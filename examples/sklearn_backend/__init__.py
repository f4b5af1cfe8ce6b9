"""A real Label Studio ML backend (2.x protocol): scikit-learn classifiers that learn online from annotations.

Text (``<Choices>`` on ``<Text>``) and image (``<Choices>`` on ``<Image>``) classification. Every
annotation event updates the model at once (``partial_fit``), ``START_TRAINING`` retrains from the
annotation server's export, and each project's model survives restarts on disk.
"""
