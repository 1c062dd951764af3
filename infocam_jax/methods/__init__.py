"""WSOL methods (CAM, ADL, HaS, CutMix, ACoL, SPG): what each does to the network, the batch and
the loss, and how its maps are read out."""
